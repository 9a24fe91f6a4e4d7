"""Pack the PngSuite reference pixels from their upstream JSON files into ``expected.npz``.

The upstream ``json/`` folder contains each file's decoded pixels as a flat ``[r, g, b, a, ...]``
array (about 5 MB in all); 16-bit files have 16-bit values plus an 8-bit ``_to8`` copy. This
script keeps the same values, stored compactly: uint16 arrays for the 16-bit files (bit depth
16 in the name, such as ``basn2c16``) and uint8 arrays for everything else, including the
``_to8`` copies, keyed by the JSON file name without ``.json``. Run it once after updating the
suite:

    python tests/data/pngsuite/make_expected.py PATH/TO/pngsuite/json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

OUTPUT = Path(__file__).parent / "expected.npz"


def main(json_folder: Path) -> None:
    """Read every ``*.json`` in `json_folder` and write `OUTPUT`."""
    arrays: dict[str, npt.NDArray[np.unsignedinteger]] = {}
    for path in sorted(json_folder.glob("*.json")):
        values = np.asarray(json.loads(path.read_text()), dtype=np.int64)
        sixteen_bit = path.stem[6:8] == "16" and not path.stem.endswith("_to8")
        arrays[path.stem] = values.astype(np.uint16 if sixteen_bit else np.uint8)
    # numpy's stubs type **kwds like its allow_pickle flag, though each entry is an array.
    np.savez_compressed(OUTPUT, **arrays)  # type: ignore[arg-type]


if __name__ == "__main__":
    main(Path(sys.argv[1]))
