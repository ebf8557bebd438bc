from setuptools import setup

setup(
    name="tinymae",
    version="0.1.0",
    description="A small, autograd-free NumPy/CuPy reproduction of Masked Autoencoders (He et al., 2022)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=["tinymae"],
    python_requires=">=3.9",
    install_requires=["numpy>=1.22", "pillow>=9.0", "matplotlib>=3.5", "tqdm>=4.60"],
    extras_require={
        # A CuPy wheel built for CUDA 12; pick cupy-cuda11x by hand on older drivers.
        "gpu": ["cupy-cuda12x>=12.0"],
        # PyTorch is an oracle for the tests and a speed reference for the benchmarks; tinymae never
        # imports it. Its tests skip cleanly without it. (Without internet mirrors, the CPU build is
        # enough: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu)
        "test": ["pytest>=7.0", "torch==2.13.0"],
    },
)
