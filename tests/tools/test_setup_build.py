"""setup.py's choice of CUDA build: default GPU architectures and the toolkit/torch version check."""
import importlib.util
import os
import subprocess
import sys

import pytest

from model_utils import REPO



@pytest.fixture(scope="module")
def setup_py():
    spec = importlib.util.spec_from_file_location("mask2former_setup", os.path.join(REPO, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: defines the helpers, runs no setup()
    return module


def test_parse_version(setup_py):
    assert setup_py.parse_version("12.1") == (12, 1)
    assert setup_py.parse_version("Cuda compilation tools, release 13.0, V13.0.88") == (13, 0)
    assert setup_py.parse_version(None) is None


@pytest.mark.parametrize(
    "toolkit,expected",
    [
        ((11, 0), "7.0;8.0+PTX"),
        ((11, 8), "7.0;8.0;8.6;9.0+PTX"),
        ((12, 1), "7.0;8.0;8.6;9.0+PTX"),
        ((13, 0), "8.0;8.6;9.0+PTX"),  # CUDA 13 cannot target Volta
    ],
)
def test_default_arch_list_fits_the_toolkit(setup_py, toolkit, expected):
    assert setup_py.default_arch_list(toolkit) == expected


def test_forced_build_without_gpu_gets_an_arch_list(setup_py):
    assert setup_py.cuda_build_env(True, False, "12.1", (12, 4), {}) == {"TORCH_CUDA_ARCH_LIST": "7.0;8.0;8.6;9.0+PTX"}
    # a list the user gave, or a GPU torch can ask, is left alone
    assert setup_py.cuda_build_env(True, False, "12.1", (12, 4), {"TORCH_CUDA_ARCH_LIST": "9.0"}) == {}
    assert setup_py.cuda_build_env(True, True, "12.1", (12, 4), {}) == {}
    assert setup_py.cuda_build_env(False, False, "12.1", (12, 4), {}) is None


def test_toolkit_major_mismatch(setup_py, capsys):
    with pytest.raises(setup_py.CudaBuildError, match=r"toolkit is 13\.0 .* CUDA 12\.1; their major versions"):
        setup_py.cuda_build_env(True, False, "12.1", (13, 0), {})
    with pytest.raises(setup_py.CudaBuildError, match="built without CUDA"):
        setup_py.cuda_build_env(True, False, None, (12, 1), {})
    with pytest.raises(setup_py.CudaBuildError, match="no CUDA toolkit"):
        setup_py.cuda_build_env(True, False, "12.1", None, {})
    # not forced: a GPU with the wrong toolkit gives a CPU-only build and says why
    assert setup_py.cuda_build_env(False, True, "12.1", (13, 0), {}) is None
    assert "CPU kernels only" in capsys.readouterr().err


def test_forced_cuda_here_is_one_clear_message():
    """FORCE_CUDA=1 on this machine (no GPU; nvcc's major differs from torch's, or no nvcc, or a
    CPU torch) stops setup.py with one line, not a traceback; unforced it configures the CPU build."""
    env = dict(os.environ, FORCE_CUDA="1")
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    forced = subprocess.run([sys.executable, "setup.py", "--name"], cwd=REPO, env=env, capture_output=True, text=True)
    if forced.returncode == 0:
        pytest.skip("this machine has a CUDA toolkit matching torch: the forced build would work")
    assert "Traceback" not in forced.stderr
    assert "setup.py: FORCE_CUDA=1, but " in forced.stderr
    env["FORCE_CUDA"] = "0"
    plain = subprocess.run([sys.executable, "setup.py", "--name"], cwd=REPO, env=env, capture_output=True, text=True)
    assert plain.returncode == 0 and plain.stdout.strip() == "mask2former", plain.stderr
