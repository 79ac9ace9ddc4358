"""Installs the `mask2former` package and builds its C++/CUDA extension `mask2former._C`.

The extension holds the multi-scale deformable attention kernels. CUDA kernels are compiled
when a GPU is visible and a CUDA toolkit of torch's major version is present, or when
``FORCE_CUDA=1`` (then a missing or mismatching toolkit is an error, and without a GPU
``TORCH_CUDA_ARCH_LIST`` defaults to the architectures of ``DEFAULT_ARCHS`` the toolkit supports);
otherwise the extension is built for the CPU only. Build with ``pip install --no-build-isolation -e .`` into an
environment that already has torch.
"""
import glob
import os
import re
import subprocess
import sys
from typing import Dict, Optional, Tuple

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

OPS_SRC = os.path.join("mask2former", "modeling", "pixel_decoder", "ops", "src")

# GPU architectures built when FORCE_CUDA=1 finds no GPU to ask and TORCH_CUDA_ARCH_LIST is unset
# (V100, A100, A10/RTX 30, H100), each with the toolkit versions that can target it: CUDA 13
# dropped Volta, 11.1 added sm_86 and 11.8 sm_90.
DEFAULT_ARCHS = (("7.0", (9, 0), (13, 0)), ("8.0", (11, 0), None), ("8.6", (11, 1), None), ("9.0", (11, 8), None))

Version = Tuple[int, int]


class CudaBuildError(RuntimeError):
    """The CUDA build was asked for (FORCE_CUDA=1) but cannot work; the message says why."""


def parse_version(text: Optional[str]) -> Optional[Version]:
    """'12.1' or nvcc's '... release 13.0, V13.0.88' -> (12, 1); None when there is none."""
    match = re.search(r"(?:release )?(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def toolkit_version(cuda_home: Optional[str]) -> Optional[Version]:
    """The version of ``cuda_home/bin/nvcc``, or None when there is no runnable nvcc."""
    if cuda_home is None:
        return None
    try:
        out = subprocess.run(
            [os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return parse_version(out[out.find("release"):])


def default_arch_list(toolkit: Version) -> str:
    """TORCH_CUDA_ARCH_LIST for a build without a GPU: DEFAULT_ARCHS that ``toolkit`` can
    target, the newest also as PTX so that later GPUs can JIT it."""
    archs = [arch for arch, first, last in DEFAULT_ARCHS if first <= toolkit and (last is None or toolkit < last)]
    if not archs:
        raise CudaBuildError(f"CUDA toolkit {toolkit[0]}.{toolkit[1]} supports none of {[a for a, _, _ in DEFAULT_ARCHS]}")
    return ";".join(archs[:-1] + [archs[-1] + "+PTX"])


def cuda_build_env(
    forced: bool, gpu_visible: bool, torch_cuda: Optional[str], toolkit: Optional[Version], env: Dict[str, str]
) -> Optional[Dict[str, str]]:
    """Whether to build the CUDA kernels: None for a CPU-only build, else the environment
    variables to set for it (a default TORCH_CUDA_ARCH_LIST when no GPU can be asked).

    Without FORCE_CUDA a missing or mismatching toolkit means a CPU-only build; with it, the
    same is a CudaBuildError naming both versions.
    """
    if not forced and not gpu_visible:
        return None
    torch_version = parse_version(torch_cuda)
    problem = None
    if torch_version is None:
        problem = f"this torch ({torch.__version__}) is built without CUDA"
    elif toolkit is None:
        problem = f"no CUDA toolkit (nvcc) was found (CUDA_HOME={CUDA_HOME})"
    elif toolkit[0] != torch_version[0]:
        problem = (
            f"the CUDA toolkit is {toolkit[0]}.{toolkit[1]} (CUDA_HOME={CUDA_HOME}) while torch was built "
            f"with CUDA {torch_cuda}; their major versions must agree: install a toolkit {torch_version[0]}.x "
            "and point CUDA_HOME at it, or use a torch built for your toolkit"
        )
    if problem is not None:
        if forced:
            raise CudaBuildError(f"FORCE_CUDA=1, but {problem}")
        print(f"setup.py: building the CPU kernels only: {problem}", file=sys.stderr)
        return None
    extra = {}
    if not gpu_visible and not env.get("TORCH_CUDA_ARCH_LIST"):
        extra["TORCH_CUDA_ARCH_LIST"] = default_arch_list(toolkit)
    return extra


def _want_cuda() -> bool:
    forced = os.environ.get("FORCE_CUDA", "0") == "1"
    gpu_visible = torch.cuda.is_available()
    toolkit = toolkit_version(CUDA_HOME) if forced or gpu_visible else None
    extra = cuda_build_env(forced, gpu_visible, torch.version.cuda, toolkit, dict(os.environ))
    if extra is None:
        return False
    for key, val in extra.items():
        print(f"setup.py: no GPU visible, building for {key}={val}", file=sys.stderr)
        os.environ[key] = val
    return True


def get_extensions():
    main = glob.glob(os.path.join(OPS_SRC, "*.cpp"))
    cpu = glob.glob(os.path.join(OPS_SRC, "cpu", "*.cpp"))
    cuda = glob.glob(os.path.join(OPS_SRC, "cuda", "*.cu"))
    if not main:
        return []
    sources = main + cpu
    define_macros = []
    extra_compile_args = {"cxx": ["-O3", "-fopenmp"]}
    extension = CppExtension
    if _want_cuda() and cuda:
        extension = CUDAExtension
        sources += cuda
        define_macros += [("WITH_CUDA", None)]
        extra_compile_args["nvcc"] = [
            "-O3",
            "-DCUDA_HAS_FP16=1",
            "-D__CUDA_NO_HALF_OPERATORS__",
            "-D__CUDA_NO_HALF_CONVERSIONS__",
            "-D__CUDA_NO_HALF2_OPERATORS__",
        ]
    return [
        extension(
            "mask2former._C",
            sorted(sources),
            include_dirs=[os.path.abspath(OPS_SRC)],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=["-fopenmp"],
        )
    ]


if __name__ == "__main__":
    try:
        ext_modules = get_extensions()
    except CudaBuildError as e:
        sys.exit(f"setup.py: {e}")
    setup(
        name="mask2former",
        version="0.1.0",
        description="Mask2Former (masked-attention mask transformer) as a detectron2 extension",
        packages=find_packages(exclude=("configs", "tests", "tests.*", "benchmarks", "tools", "demo", "datasets")),
        package_data={
            "mask2former": ["hf_key_map.json"],
            "mask2former.data.datasets": ["metadata/*.json"],
            "mask2former.data.synthetic": ["*.json"],
            "mask2former_video.data_video.datasets": ["*.json"],
        },
        python_requires=">=3.10",
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension},
    )
