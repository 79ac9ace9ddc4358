"""Installs the `mask2former` package and builds its C++/CUDA extension `mask2former._C`.

The extension holds the multi-scale deformable attention kernels. CUDA kernels are compiled
when a CUDA toolkit matching torch's is present (or ``FORCE_CUDA=1``); otherwise the extension
is built for the CPU only. Build with ``pip install --no-build-isolation -e .`` into an
environment that already has torch.
"""
import glob
import os

from setuptools import find_packages, setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

OPS_SRC = os.path.join("mask2former", "modeling", "pixel_decoder", "ops", "src")


def _want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.cuda.is_available() and CUDA_HOME is not None


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


setup(
    name="mask2former",
    version="0.1.0",
    description="Mask2Former (masked-attention mask transformer) as a detectron2 extension",
    packages=find_packages(exclude=("configs", "tests", "tests.*", "benchmarks", "tools", "demo", "datasets")),
    package_data={
        "mask2former": ["hf_key_map.json"],
        "mask2former.data.datasets": ["metadata/*.json"],
        "mask2former.data.synthetic": ["*.json"],
    },
    python_requires=">=3.10",
    ext_modules=get_extensions(),
    cmdclass={"build_ext": BuildExtension},
)
