from setuptools import find_packages, setup

setup(
    name="zsup",
    version="0.1.0",
    description="A process supervisor driven over ZeroMQ, HTTP and websockets",
    packages=find_packages(exclude=["tests", "tests.*"]),
    python_requires=">=3.11",
    install_requires=[
        "pyzmq>=25",
        "psutil>=5.9",
        "waitress>=3",
        "webob>=1.8",
        "ws4py>=0.6",
        "configobj>=5.0.8",
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout"]},
    entry_points={
        "console_scripts": [
            "zsupd = zsup.cli.zsupd:main",
            "zsupctl = zsup.cli.zsupctl:main",
            "zsup = zsup.cli.procfile_tool:main",
            "zsup-http = zsup.cli.http_gateway:main",
            "zsup-lookupd = zsup.cli.lookupd:main",
        ]
    },
)
