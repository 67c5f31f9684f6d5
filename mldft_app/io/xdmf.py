"""XDMF 3 sidecar: lets ParaView/VisIt open the grid fields of an output HDF5 file as a 3-D mesh.

The XML file holds no data; each attribute points into the HDF5 file by a path relative to the XDMF
file, so the two files may be moved together. Grid point (i, j, k) sits at
``origin + i/nx a + j/ny b + k/nz c`` (Angstrom), the convention of the descriptor stage; the values
are point (node) data, and the periodic images at fractional coordinate 1 are not repeated.

Axis order: our datasets are C-ordered (nx, ny, nz), z fastest, and XDMF takes the fastest axis of a
structured grid as its X (Dimensions are listed Z Y X), as do its readers (VTK's vtkXdmfReader behind
ParaView, VisIt's). A 3DCoRectMesh (origin and
spacings only) would therefore show the cell's c axis along the viewer's x: a mirror image of the cell.
So every grid point's Cartesian position is written (3DSMesh, XYZ, float32 Angstrom, 12 bytes per
point in the geometry file ``<xdmf>.geometry.h5``) and each value sits at its true position, x along
a, for any cell, orthogonal or not (tests/test_xdmf.py reads the files back with VTK's vtkXdmfReader).
The structured grid's own i, j, k index directions are then c, b, a.
No MPI: call it on one rank after the output file is complete.
"""

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path, write_text


XDMF_TYPES = {"f": "Float", "i": "Int", "u": "UInt"}


def _number_type(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind not in XDMF_TYPES:
        raise ValueError(f"dataset type {dtype} cannot be described in XDMF")
    return XDMF_TYPES[dtype.kind], str(dtype.itemsize)


def _dims(shape):
    return " ".join(str(int(n)) for n in shape)


def _data_item(parent, shape, dtype, text, fmt="HDF"):
    number_type, precision = _number_type(dtype)
    item = ET.SubElement(parent, "DataItem", Dimensions=_dims(shape), NumberType=number_type,
                         Precision=precision, Format=fmt)
    item.text = text
    return item


def _add_attributes(grid, name, shape, dtype, reference):
    """One Attribute for a scalar or 3-vector field; one per component (a hyperslab) otherwise.

    Viewers read an (nx, ny, nz, m) "Matrix" attribute inconsistently, so e.g. the LDOS appears as
    ``ldos_0000`` ... one energy per attribute.
    """
    trailing = tuple(shape[3:])
    if trailing in ((), (3,)):
        attribute = ET.SubElement(grid, "Attribute", Name=name, AttributeType="Vector" if trailing else "Scalar", Center="Node")
        _data_item(attribute, shape, dtype, reference)
        return
    (m,) = trailing
    width = max(4, len(str(m - 1)))
    for comp in range(m):
        attribute = ET.SubElement(grid, "Attribute", Name=f"{name}_{comp:0{width}d}", AttributeType="Scalar", Center="Node")
        slab = ET.SubElement(attribute, "DataItem", ItemType="HyperSlab", Dimensions=_dims(shape[:3]), Type="HyperSlab")
        selection = ET.SubElement(slab, "DataItem", Dimensions="3 4", Format="XML")
        selection.text = f"0 0 0 {comp} 1 1 1 1 {_dims(shape[:3])} 1"
        _data_item(slab, shape, dtype, reference)


def write_geometry(path, cell, shape, origin=(0.0, 0.0, 0.0), dataset="xyz"):
    """Cartesian positions of every grid point, float32 (nx*ny*nz, 3) Angstrom, written plane by plane.

    Memory stays at one x-plane (ny*nz*3 floats).
    """
    cell = np.asarray(cell, dtype=np.float64)
    nx, ny, nz = (int(n) for n in shape)
    frac_j, frac_k = np.meshgrid(np.arange(ny) / ny, np.arange(nz) / nz, indexing="ij")
    plane = frac_j.reshape(-1, 1) * cell[1] + frac_k.reshape(-1, 1) * cell[2] + np.asarray(origin, dtype=np.float64)
    with atomic_path(path) as written, h5py.File(written, "w") as h5:
        dset = h5.create_dataset(dataset, shape=(nx * ny * nz, 3), dtype=np.float32, chunks=(ny * nz, 3))
        dset.attrs["units"] = "Angstrom"
        for i in range(nx):
            dset[i * ny * nz:(i + 1) * ny * nz] = (plane + (i / nx) * cell[0]).astype(np.float32)


def write_xdmf(h5_path, xdmf_path, datasets, cell, shape, origin=(0.0, 0.0, 0.0), name="grid"):
    """Write an XDMF 3 file describing grid datasets of ``h5_path`` on the real-space grid.

    Parameters
    ----------
    h5_path : str or Path
        The (complete) HDF5 output file; it is opened read-only to check shapes and types.
    xdmf_path : str or Path
        The XML file to write (written under a temporary name, then renamed).
    datasets : iterable of str
        HDF5 dataset paths, each of shape (nx, ny, nz) (scalar field) or (nx, ny, nz, m) (a vector field
        if m = 3, else m scalar fields ``<name>_0000`` ...).
    cell : array_like, shape (3, 3)
        Cell vectors as rows, Angstrom.
    shape : tuple of 3 int
        Grid (nx, ny, nz).
    origin : array_like, shape (3,)
        Position of grid point (0, 0, 0), Angstrom.

    Every point's position goes to ``<xdmf_path>.geometry.h5`` (see the module docstring).

    Returns
    -------
    Path of the XDMF file.
    """
    h5_path, xdmf_path = Path(h5_path), Path(xdmf_path)
    shape = tuple(int(n) for n in shape)
    cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
    base = xdmf_path.resolve().parent

    root = ET.Element("Xdmf", Version="3.0")
    domain = ET.SubElement(root, "Domain")
    grid = ET.SubElement(domain, "Grid", Name=name, GridType="Uniform")
    geometry_file = xdmf_path.with_name(xdmf_path.name + ".geometry.h5")
    write_geometry(geometry_file, cell, shape, origin)
    ET.SubElement(grid, "Topology", TopologyType="3DSMesh", Dimensions=_dims(shape))
    geometry = ET.SubElement(grid, "Geometry", GeometryType="XYZ")
    _data_item(geometry, (int(np.prod(shape)), 3), np.float32, f"{os.path.relpath(geometry_file, base)}:/xyz")

    relative = os.path.relpath(h5_path.resolve(), base)
    with h5py.File(h5_path, "r") as h5:
        for path in datasets:
            if path not in h5 or not isinstance(h5[path], h5py.Dataset):
                raise KeyError(f"{h5_path} has no dataset {path!r}")
            dset = h5[path]
            if tuple(dset.shape[:3]) != shape or dset.ndim > 4:
                raise ValueError(f"dataset {path!r} of shape {dset.shape} is not a field on the grid {shape}")
            _add_attributes(grid, path.strip("/"), dset.shape, dset.dtype, f"{relative}:/{path.strip('/')}")

    ET.indent(root)
    write_text(xdmf_path, '<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n' + ET.tostring(root, encoding="unicode") + "\n")
    return xdmf_path
