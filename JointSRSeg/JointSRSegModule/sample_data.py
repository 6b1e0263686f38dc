"""Sample Data module entries for the bundled MNI152 sample (``Resources/SampleData``, licence in LICENSE.txt).

The files ship with the extension (top-level CMakeLists.txt), so the entries load from disk
(``file://`` URIs, which Sample Data's downloader copies into its cache like any download).
"""

from __future__ import annotations

from pathlib import Path

from .dependencies import resources_dir

CATEGORY = "JointSRSeg"
# (sample name, file in Resources/SampleData, node name, load type)
SAMPLES = (
    ("JointSRSeg MNI152 T1 (1 mm)", "MNI152_T1_1mm.nii.gz", "MNI152 T1", "VolumeFile"),
    ("JointSRSeg MNI152 tissue labels", "MNI152_tissue_1mm.nii.gz", "MNI152 tissue", "SegmentationFile"),
)
LICENSE_FILE = "LICENSE.txt"


def sample_dir() -> Path:
    return resources_dir() / "SampleData"


def sample_files() -> list[Path]:
    """Every file the entries load, and the licence shipped with them."""
    return [sample_dir() / name for _, name, _, _ in SAMPLES] + [sample_dir() / LICENSE_FILE]


def register_sample_data(icon: str | Path) -> None:
    """Called once Slicer has started (``startupCompleted``); the SampleData module must be loaded."""
    import SampleData

    for sample, name, node, load_type in SAMPLES:
        path = sample_dir() / name
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=sample,
            thumbnailFileName=str(icon),
            uris=path.resolve().as_uri(),
            fileNames=name,
            nodeNames=node,
            loadFileType=load_type,
        )
