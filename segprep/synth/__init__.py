"""`segprep synth`: synthetic datasets in the real on-disk layouts, with known defects.

``make_dataset(out, layout, n, size, noise, seed)`` paints ``n`` samples of the layout's
domain (colonoscopy polyps for kvasir-seg, cvc-clinicdb and folder; retinal fundus vessels
for drive; dermoscopic skin lesions for ph2), writes them with the real dataset's folder
structure, file names and formats (see :mod:`segprep.synth.layouts`), and injects one defect
into each of ``round(noise * n)`` samples, cycling through a seeded shuffle of the layout's
codes (:data:`DEFECTS`; drive leaves out ``holes``, since 1-4 px vessels have no inside).

Beside the data it writes ``synth_truth.csv`` (stem, defect, details: one row per defective
sample) and ``synth_groups.csv`` (stem, group: video sequence for cvc-clinicdb, else the
sample itself; a duplicate or near-duplicate shares its source's group). The truth names
the copy, never its source; sources are clean samples whenever enough are left.
The same arguments give byte-identical files.

Modules: ``painters`` (one painter per domain), ``defects`` (one function per code),
``layouts`` (naming and encoders per dataset), ``generate`` (planning and writing).
"""

from segprep.synth.defects import DEFECTS
from segprep.synth.generate import LAYOUT_DEFECTS, LAYOUTS, SynthResult, make_dataset
from segprep.synth.layouts import LAYOUT_SPECS

__all__ = ["DEFECTS", "LAYOUTS", "LAYOUT_DEFECTS", "LAYOUT_SPECS", "SynthResult", "make_dataset"]
