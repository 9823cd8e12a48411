"""The top-level README's "any other language" protoc command, for Java, to the letter.

It runs on a copy of protos/ where a checkout's root would be, so that OUT/ and .protoc/ stay
out of the repository.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.interop.conftest import JAVA_DIR, ROOT, readme_block, require_tools, run_build


def test_readme_other_language_command_makes_the_java_classes_the_sdk_ships(tmp_path: Path) -> None:
    require_tools("mvn")
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT / "protos", checkout / "protos")
    run_build(["bash", "-euo", "pipefail", "-c", readme_block(ROOT / "README.md", "other-language")], checkout)

    # The same protoc as scripts/gen-protos, so exactly the classes clients/java ships, which
    # compile and pass the SDK's tests. A README that drifts from the pom's version fails here.
    generated = checkout / "OUT" / "io" / "pushplat" / "v1"
    shipped = JAVA_DIR / "src" / "main" / "java" / "io" / "pushplat" / "v1"
    names = sorted(path.name for path in generated.glob("*.java"))
    assert "SendRequest.java" in names and "ClientFrame.java" in names, names
    assert names == sorted(path.name for path in shipped.glob("*.java"))
    for name in names:
        assert (generated / name).read_bytes() == (shipped / name).read_bytes(), f"{name} differs from the SDK's"
