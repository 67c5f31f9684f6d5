"""XDMF sidecar: parsed back with a small XDMF reader (xml.etree + h5py) that resolves every reference.

meshio cannot be used as the parser: its XDMF reader handles unstructured meshes only (it needs a
DataItem under <Topology> and XYZ geometry). The files were also checked once by hand with VTK's
vtkXdmfReader (the reader behind ParaView): CoRectMesh -> ImageData with the documented axis order,
3DSMesh -> StructuredGrid with exact Cartesian positions, hyperslab components read correctly.
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
    if topology.get("TopologyType") == "3DCoRectMesh":
        assert geometry.get("GeometryType") == "ORIGIN_DXDYDZ"
        origin, spacing = (read_item(i, base) for i in geometry.findall("DataItem"))
        index = np.stack(np.meshgrid(*[np.arange(n) for n in dims], indexing="ij"), axis=-1).reshape(-1, 3)
        points = origin + index * spacing  # slowest axis first, as in Dimensions
    else:
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


def test_orthogonal_cell_is_a_corectmesh_with_spacing_per_axis(output, tmp_path):
    cell = np.diag([4.0, 10.0, 18.0])
    (tmp_path / "views").mkdir()
    xdmf = write_xdmf(output, tmp_path / "views" / "out.xdmf", ["density", "/ldos", "grad"], cell, SHAPE, origin=(1.0, 2.0, 3.0))
    topology, dims, points, fields = parse(xdmf)
    assert topology == "3DCoRectMesh" and dims == SHAPE
    np.testing.assert_allclose(points, expected_points(cell, (1.0, 2.0, 3.0)))
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


def test_explicit_geometry_on_request_matches_corectmesh(output, tmp_path):
    cell = np.diag([4.0, 10.0, 18.0])
    _, _, implicit, _ = parse(write_xdmf(output, tmp_path / "a.xdmf", ["density"], cell, SHAPE))
    _, _, explicit, _ = parse(write_xdmf(output, tmp_path / "b.xdmf", ["density"], cell, SHAPE, explicit_geometry=True))
    np.testing.assert_allclose(explicit, implicit, atol=1e-5)


@pytest.mark.parametrize("dataset,error", [("dos", ValueError), ("missing", KeyError)])
def test_non_grid_or_missing_dataset_is_refused(output, tmp_path, dataset, error):
    with pytest.raises(error, match=dataset):
        write_xdmf(output, tmp_path / "x.xdmf", [dataset], np.eye(3), SHAPE)
    assert not (tmp_path / "x.xdmf").exists()
