from setuptools import find_packages, setup

setup(
    name="tinymae",
    version="0.1.0",
    description="A small, autograd-free NumPy/CuPy reproduction of Masked Autoencoders (He et al., 2022)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["tinymae", "tinymae.*"]),
    python_requires=">=3.9",
    # threadpoolctl holds BLAS to one thread per worker in the data-parallel CPU step (parallel.py).
    install_requires=["numpy>=1.22", "pillow>=9.0", "matplotlib>=3.5", "tqdm>=4.60", "threadpoolctl>=3.1"],
    extras_require={
        # CuPy ships one wheel per CUDA major version; pick the one that matches your NVIDIA driver
        # (nvidia-smi prints "CUDA Version: 12.x" or "13.x"), as CuPy's own install guide says.
        "cuda12": ["cupy-cuda12x>=13.0"],
        "cuda13": ["cupy-cuda13x>=14.0"],
        # PyTorch is an oracle for the tests and a speed reference for the benchmarks; tinymae never
        # imports it. Its tests skip cleanly without it. The CPU build of torch is all they need.
        "test": ["pytest>=7.0", "torch==2.13.0"],
    },
)
