# Setup: makes this notebook run in a fresh Colab runtime; it does nothing where tfcustom is importable.
# tfcustom has no public package yet. It is installed from the repository in REPO_URL, or from a
# wheel uploaded to the session (Files panel; build it in a clone with `pip wheel --no-deps .`):
# a tfcustom-*.whl in the working directory (/content on Colab) is used first.
REPO_URL = "https://github.com/OWNER/tfcustom"  # <- the repository this notebook comes from
TF_TPU_VERSION = "2.20.0"  # TPU runtimes only: the tensorflow-tpu release that drives the TPU

import glob, importlib.util, os, subprocess, sys


def pip_install(*args):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


if importlib.util.find_spec("tfcustom") is None:
    wheels = sorted(glob.glob("tfcustom-*.whl"))
    if not wheels and "/OWNER/" in REPO_URL:
        raise SystemExit("Set REPO_URL in this cell to the tfcustom repository, or upload a tfcustom-*.whl, then run it again.")
    source = wheels[-1] if wheels else f"git+{REPO_URL}"
    on_tpu = bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*") or os.environ.get("TPU_ACCELERATOR_TYPE"))
    if on_tpu:
        # A TPU runtime has no TensorFlow, and only the tensorflow-tpu build drives the TPU. tfcustom
        # depends on `tensorflow` (the CPU build), so it goes in with --no-deps: pip would otherwise
        # install the CPU build over tensorflow-tpu.
        if importlib.util.find_spec("tensorflow") is None:
            pip_install(f"tensorflow-tpu=={TF_TPU_VERSION}")
        pip_install("--no-deps", source)
        pip_install("keras>=3", "absl-py", "matplotlib", "scikit-learn")
    else:
        pip_install(source)

import tfcustom

print("tfcustom", tfcustom.__version__)
