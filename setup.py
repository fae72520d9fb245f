"""Packaging for reid-workbench; metadata lives in settings.ini (nbdev 2)."""
from configparser import ConfigParser

import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read("settings.ini", encoding="utf-8")
cfg = cfg["DEFAULT"]

requirements = cfg.get("requirements", "").split()
extras = {
    "app": ["voila>=0.5"],
    "dev": ["pytest>=7", "pytest-timeout", "nbdev==2.4.14", "fastcore>=1.12.3,<2", "execnb>=0.1.12,<0.2",
            "ghapi>=1.0.3,<2", "fastgit<0.1", "jupyterlab", "voila>=0.5", "playwright",
            "scikit-image"],
    "pose": ["mediapipe==0.10.21", "numpy<2"],
    "faiss": ["faiss-cpu"],
}
scripts = [s for s in cfg.get("console_scripts", "").split("\n") if s.strip()]

setuptools.setup(
    name=cfg["lib_name"],
    version=cfg["version"],
    description=cfg["description"],
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    author=cfg["author"],
    author_email=cfg["author_email"],
    url=cfg["git_url"],
    keywords=cfg["keywords"].split(),
    packages=setuptools.find_packages(include=["reid_workbench", "reid_workbench.*"]),
    include_package_data=True,
    install_requires=requirements,
    extras_require=extras,
    python_requires=">=" + cfg["min_python"],
    entry_points={"console_scripts": scripts, "nbdev": [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
