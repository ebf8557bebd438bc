from setuptools import find_packages, setup

setup(
    name="tinymae",
    version="0.2.0",
    description="Masked Autoencoders (He et al., CVPR 2022) written by hand in NumPy and CuPy, without autograd",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    url="https://github.com/facebookresearch/mae",  # the official implementation tinymae follows
    packages=find_packages(include=["tinymae", "tinymae.*"]),
    python_requires=">=3.10,<3.14",
    install_requires=["numpy>=1.22", "pillow>=9.0", "matplotlib>=3.5", "tqdm>=4.60", "threadpoolctl>=3.1"],
    extras_require={
        # CuPy ships one wheel per CUDA major version: nvidia-smi prints "CUDA Version: 12.x" or "13.x".
        "cuda12": ["cupy-cuda12x>=13.0"],
        "cuda13": ["cupy-cuda13x>=14.0"],
        # PyTorch is an oracle for the tests and a speed reference for the benchmarks; tinymae never imports it.
        # The CPU build is all they need: the README says how to take it from PyTorch's CPU index.
        "test": ["pytest>=7.0", "torch==2.13.0", "submitit>=1.5"],
        # research/experiments.py --engine slurm
        "slurm": ["submitit>=1.5"],
    },
    classifiers=["Programming Language :: Python :: 3.10", "Programming Language :: Python :: 3.11",
                 "Programming Language :: Python :: 3.12", "Programming Language :: Python :: 3.13",
                 "License :: OSI Approved :: MIT License"],
)
