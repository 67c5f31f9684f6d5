"""XDMF sidecar: read back with VTK's vtkXdmfReader (the reader behind ParaView) and with a small XDMF
parser (xml.etree + h5py) that resolves every reference.

meshio cannot be used: its XDMF reader handles unstructured meshes only. VTK (PyPI ``vtk``) is a
test-only dependency (bin/setup-env, extra ``[test]``).
"""

import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np
import pytest

from mldft_app.io.xdmf import write_xdmf

SHAPE = (4, 5, 6)


def read_item(item, base):
    """The array a DataItem describes (XML inline, HDF reference or a hyperslab of one)."""
    dims = tuple(int(n) for n in item.get("Dimensions").split())
    if item.get("ItemType") == "HyperSlab":
        selection_item, source_item = list(item)
        start, stride, count = read_item(selection_item, base).astype(int)
        source = read_item(source_item, base)
        index = tuple(slice(s, s + st * c, st) for s, st, c in zip(start, stride, count))
        return source[index].reshape(dims)
    if item.get("Format") == "XML":
        return np.array(item.text.split(), dtype=float).reshape(dims)
    assert item.get("Format") == "HDF"
    file_name, dataset = item.text.strip().split(":")
    assert not Path(file_name).is_absolute(), "references must be relative to the XDMF file"
    with h5py.File(base / file_name, "r") as h5:
        data = h5[dataset][()]
    assert data.shape == dims
    assert {"Float": "f", "Int": "i", "UInt": "u"}[item.get("NumberType")] == data.dtype.kind
    assert int(item.get("Precision")) == data.dtype.itemsize
    return data


def parse(xdmf_path):
    """(topology type, dims, point positions (n, 3) in data order, {attribute name: array})."""
    root = ET.parse(xdmf_path).getroot()
    assert root.tag == "Xdmf" and root.get("Version") == "3.0"
    (grid,) = root.find("Domain").findall("Grid")
    topology, geometry = grid.find("Topology"), grid.find("Geometry")
    dims = tuple(int(n) for n in topology.get("Dimensions").split())
    base = Path(xdmf_path).parent
    assert topology.get("TopologyType") == "3DSMesh" and geometry.get("GeometryType") == "XYZ"
    points = read_item(geometry.find("DataItem"), base)
    fields = {a.get("Name"): read_item(a.find("DataItem"), base) for a in grid.findall("Attribute")}
    for attribute in grid.findall("Attribute"):
        assert attribute.get("Center") == "Node"
    return topology.get("TopologyType"), dims, points, fields


def expected_points(cell, origin=(0.0, 0.0, 0.0)):
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1).reshape(-1, 3)
    return np.asarray(origin) + (index / np.asarray(SHAPE)) @ np.asarray(cell)


@pytest.fixture()
def output(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "run" / "out.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as h5:
        h5["density"] = rng.random(SHAPE)
        h5["ldos"] = rng.random(SHAPE + (7,)).astype(np.float32)
        h5["grad"] = rng.random(SHAPE + (3,))
        h5["dos"] = rng.random(7)
    return path


def test_orthogonal_cell_gets_point_positions_with_x_along_a(output, tmp_path):
    cell = np.diag([4.0, 10.0, 18.0])
    (tmp_path / "views").mkdir()
    xdmf = write_xdmf(output, tmp_path / "views" / "out.xdmf", ["density", "/ldos", "grad"], cell, SHAPE, origin=(1.0, 2.0, 3.0))
    topology, dims, points, fields = parse(xdmf)
    assert topology == "3DSMesh" and dims == SHAPE
    np.testing.assert_allclose(points, expected_points(cell, (1.0, 2.0, 3.0)), atol=1e-5)  # float32 positions
    with h5py.File(output) as h5:
        np.testing.assert_array_equal(fields["density"], h5["density"][()])
        np.testing.assert_array_equal(fields["grad"], h5["grad"][()])
        for e in range(7):
            np.testing.assert_array_equal(fields[f"ldos_{e:04d}"], h5["ldos"][..., e])
    assert sorted(fields) == ["density", "grad"] + [f"ldos_{e:04d}" for e in range(7)]
    assert "../run/out.h5:/density" in xdmf.read_text()


def test_triclinic_cell_gets_explicit_point_positions(output, tmp_path):
    cell = np.array([[4.0, 0.0, 0.0], [1.5, 5.0, 0.0], [0.5, 1.0, 6.0]])
    xdmf = write_xdmf(output, tmp_path / "out.xdmf", ["density"], cell, SHAPE)
    topology, dims, points, fields = parse(xdmf)
    assert topology == "3DSMesh" and dims == SHAPE
    np.testing.assert_allclose(points, expected_points(cell), atol=1e-5)  # float32 positions
    with h5py.File(output) as h5:
        np.testing.assert_array_equal(fields["density"], h5["density"][()])
    assert not list(tmp_path.glob("*.tmp"))


def read_with_vtk(xdmf):
    """(points (n, 3) Angstrom, {array name: values (n,) or (n, 3)}) as VTK's XDMF reader (ParaView's) returns them."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkIOXdmf2 import vtkXdmfReader

    reader = vtkXdmfReader()
    reader.SetFileName(str(xdmf))
    reader.Update()
    grid = reader.GetOutputDataObject(0)
    assert grid.GetClassName() == "vtkStructuredGrid"
    points = vtk_to_numpy(grid.GetPoints().GetData()).astype(np.float64)
    data = grid.GetPointData()
    return points, {data.GetArrayName(i): vtk_to_numpy(data.GetArray(i)) for i in range(data.GetNumberOfArrays())}


@pytest.mark.parametrize("cell", [np.diag([4.0, 10.0, 18.0]), np.array([[4.0, 0.0, 0.0], [1.5, 5.0, 0.0], [0.5, 1.0, 6.0]])],
                         ids=["orthogonal", "triclinic"])
def test_vtk_reader_puts_every_value_at_its_grid_point(tmp_path, cell):
    """Each value read by VTK sits at origin + i/nx a + j/ny b + k/nz c: x along a, for any cell."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    code = index @ np.array([1.0, 100.0, 10000.0])  # value = i + 100 j + 10000 k identifies the point
    path = tmp_path / "out.h5"
    with h5py.File(path, "w") as h5:
        h5["density"] = code
        h5["ldos"] = np.stack([code + 0.25 * e for e in range(5)], axis=-1).astype(np.float32)
        h5["grad"] = index.astype(np.float64)
    origin = np.array([1.0, 2.0, 3.0])
    points, arrays = read_with_vtk(write_xdmf(path, tmp_path / "out.xdmf", ["density", "ldos", "grad"], cell, SHAPE, origin=origin))
    assert len(points) == np.prod(SHAPE) and sorted(arrays) == ["density", "grad"] + [f"ldos_{e:04d}" for e in range(5)]
    ijk = np.rint(np.linalg.solve(cell.T, (points - origin).T).T * SHAPE).astype(int)
    np.testing.assert_allclose(points, origin + (ijk / SHAPE) @ cell, atol=1e-5)
    np.testing.assert_array_equal(arrays["density"], ijk @ np.array([1, 100, 10000]))
    np.testing.assert_array_equal(arrays["grad"], ijk)
    np.testing.assert_array_equal(arrays["ldos_0003"], (ijk @ np.array([1, 100, 10000]) + 0.75).astype(np.float32))
    # the value of grid point (1, 0, 0) lies one step along a from the origin, that of (0, 0, 1) along c
    np.testing.assert_allclose(points[arrays["density"] == 1][0], origin + cell[0] / SHAPE[0], atol=1e-5)
    np.testing.assert_allclose(points[arrays["density"] == 10000][0], origin + cell[2] / SHAPE[2], atol=1e-5)


@pytest.mark.parametrize("dataset,error", [("dos", ValueError), ("missing", KeyError)])
def test_non_grid_or_missing_dataset_is_refused(output, tmp_path, dataset, error):
    with pytest.raises(error, match=dataset):
        write_xdmf(output, tmp_path / "x.xdmf", [dataset], np.eye(3), SHAPE)
    assert not (tmp_path / "x.xdmf").exists()
