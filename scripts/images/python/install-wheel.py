"""Install a pure-Python wheel without pip (runs inside the image being built).

usage: python3 install-wheel.py WHEEL [WHEEL ...]

Unpacks each wheel into the interpreter's site directory for locally installed
packages (/usr/local/lib/python3.X/dist-packages on Debian), writes its console
scripts to /usr/local/bin and byte-compiles it.  Dependencies are not resolved:
the recipe installs them from Debian packages.
"""

import compileall
import configparser
import os
import site
import sys
import zipfile

BIN = "/usr/local/bin"


def install(wheel: str) -> None:
    target = site.getsitepackages()[0]
    os.makedirs(target, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        tops = {n.split("/", 1)[0] for n in names}
        if any(t.endswith(".data") for t in tops):
            sys.exit(f"{wheel}: wheels with a .data directory are not supported")
        zf.extractall(target)
    dist_info = next(t for t in tops if t.endswith(".dist-info"))
    with open(os.path.join(target, dist_info, "INSTALLER"), "w") as fh:
        fh.write("execbroker-image-recipe\n")
    entry_points = os.path.join(target, dist_info, "entry_points.txt")
    if os.path.exists(entry_points):
        cp = configparser.ConfigParser(delimiters=("=",))
        cp.optionxform = str
        cp.read(entry_points)
        if cp.has_section("console_scripts"):
            for name, ref in cp.items("console_scripts"):
                module, _, func = ref.strip().partition(":")
                script = os.path.join(BIN, name)
                with open(script, "w") as fh:
                    fh.write(
                        "#!/usr/bin/python3\n"
                        "import sys\n"
                        f"from {module} import {func.split('.')[0]}\n"
                        f"sys.exit({func}())\n"
                    )
                os.chmod(script, 0o755)
    for entry in tops - {dist_info}:
        path = os.path.join(target, entry)
        if os.path.isdir(path):
            compileall.compile_dir(path, quiet=1)
    print(f"installed {os.path.basename(wheel)} into {target}")


if __name__ == "__main__":
    for w in sys.argv[1:]:
        install(w)
