"""Import names: the repository folder ``kernels/`` installs as the package ``reduce_scatterv``, so it
sits beside Hugging Face's ``kernels`` (the package transformers looks for, which owns that
top-level name) and each ``import`` gets its own code; from a checkout's root ``import kernels``
still works where Hugging Face's package is not installed, as the same modules, not a second copy.

Every check runs in a fresh interpreter (a user's process), from a folder outside the checkout or
from the checkout's root. The Hugging Face cases need its package in this venv (``.ci/run``
installs ``kernels==0.17.2`` in its vLLM venv and runs this file there); the others need it absent.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _hf_kernels() -> md.Distribution | None:
    try:
        return md.distribution("kernels")
    except md.PackageNotFoundError:
        return None


needs_hf = pytest.mark.skipif(_hf_kernels() is None, reason="Hugging Face's kernels is not installed in this venv; "
                              ".ci/run installs kernels==0.17.2 in its vLLM venv and runs this file there")
without_hf = pytest.mark.skipif(_hf_kernels() is not None, reason="Hugging Face's kernels is installed in this "
                                "venv: `import kernels` is that package here (checked by the needs_hf cases)")


def _python(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter in ``cwd``; it prints one JSON object last."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


PROBE = """
    import json, sys, torch
    import kernels, reduce_scatterv
    print(json.dumps({
        "kernels_file": kernels.__file__,
        "kernels_is_ours": kernels is reduce_scatterv,
        "hf_api": hasattr(kernels, "get_kernel"),
        "ours_file": reduce_scatterv.__file__,
        "ours_api": all(callable(getattr(reduce_scatterv, n, None)) for n in ("reduce_scatterv", "all_gatherv", "workspace")),
        "op": hasattr(torch.ops.rsv, "reduce_scatterv"),
    }))
"""


@needs_hf
@pytest.mark.parametrize("where", ["elsewhere", "checkout root"])
def test_each_name_imports_its_own_package_beside_hugging_faces_kernels(where, tmp_path):
    """``import kernels`` is Hugging Face's package, also from the checkout's root (where the folder
    ``kernels/`` comes first on sys.path); ``import reduce_scatterv`` is this project."""
    got = _python(PROBE, tmp_path if where == "elsewhere" else ROOT)
    hf_init = Path(_hf_kernels().locate_file("kernels/__init__.py"))
    assert Path(got["kernels_file"]).samefile(hf_init) and got["hf_api"], got
    assert Path(got["ours_file"]).samefile(ROOT / "kernels" / "__init__.py") and got["ours_api"] and got["op"], got


@needs_hf
def test_transformers_imports_hugging_faces_kernels_from_the_checkout_root():
    """transformers' hub-kernel integration does ``from kernels import ...`` when it finds the
    package; from the checkout's root that must still be Hugging Face's."""
    pytest.importorskip("transformers")
    got = _python("""
        import json
        from transformers.utils.import_utils import is_kernels_available
        import transformers.integrations.hub_kernels as hub
        print(json.dumps({"available": is_kernels_available(), "module": hub.__name__}))
    """, ROOT)
    assert got == {"available": True, "module": "transformers.integrations.hub_kernels"}


@needs_hf
def test_the_two_distributions_install_no_file_in_common(tmp_path):
    """What pip recorded for each (read outside the checkout, whose build metadata would shadow it)."""
    got = _python("""
        import json, importlib.metadata as md
        print(json.dumps({d: sorted(str(f) for f in md.files(d) or []) for d in ("reduce-scatterv", "kernels")}))
    """, tmp_path)
    ours, theirs = set(got["reduce-scatterv"]), set(got["kernels"])
    assert ours and "kernels/__init__.py" in theirs
    assert not ours & theirs, sorted(ours & theirs)[:5]
    assert not any(f.startswith("kernels/") for f in ours), sorted(ours)[:10]


def test_the_engine_plugins_are_entry_points_of_reduce_scatterv(tmp_path):
    got = _python("""
        import json, importlib.metadata as md
        print(json.dumps({g: [e.value for e in md.entry_points(group=g) if e.name == "reduce_scatterv"]
                          for g in ("sglang.srt.plugins", "vllm.general_plugins")}))
    """, tmp_path)
    assert got == {"sglang.srt.plugins": ["reduce_scatterv.plugins.sglang:register"],
                   "vllm.general_plugins": ["reduce_scatterv.plugins.vllm:register"]}
    for module in ("sglang", "vllm"):  # the plugin modules import without their engine (they import it lazily)
        _python(f"import json, reduce_scatterv.plugins.{module} as p; print(json.dumps(callable(p.register)))", tmp_path)


@without_hf
def test_kernels_from_the_checkout_root_is_the_installed_package_itself():
    """One copy of the code under both names: the same module objects (so one custom op and one
    workspace per group), submodules included, and the package's exports not hidden by the
    submodules of the same name (``workspace``, the function, over ``workspace``, the module)."""
    got = _python("""
        import json, sys
        import kernels, reduce_scatterv
        import kernels.api, kernels.plugins.common
        from kernels.workspace import workspace
        print(json.dumps({
            "same": kernels is reduce_scatterv,
            "submodules": kernels.api is reduce_scatterv.api
                          and sys.modules["kernels.plugins.common"] is sys.modules["reduce_scatterv.plugins.common"],
            "spec_kept": sys.modules["kernels.api"].__spec__.name,
            "export_kept": workspace is reduce_scatterv.workspace and callable(reduce_scatterv.workspace),
            "names": sorted(n for n in sys.modules if n.endswith(".custom_op")),
            "copies": len({id(m) for n, m in sys.modules.items() if n.endswith(".custom_op")}),
        }))
    """, ROOT)
    assert got == {"same": True, "submodules": True, "spec_kept": "reduce_scatterv.api", "export_kept": True,
                   "names": ["reduce_scatterv.custom_op"], "copies": 1}


@without_hf
def test_a_copy_of_the_folder_imported_as_kernels_registers_its_own_custom_op(tmp_path):
    """A checkout other than the installed one, imported as ``kernels`` beside ``reduce_scatterv``,
    is a second copy of the code: it must not collide with the installed package's op."""
    shutil.copytree(ROOT / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    got = _python("""
        import json, torch
        import reduce_scatterv, kernels
        print(json.dumps({"separate": kernels is not reduce_scatterv,
                          "ops": [hasattr(torch.ops.rsv, "reduce_scatterv"),
                                  hasattr(torch.ops.rsv_kernels, "reduce_scatterv")]}))
    """, tmp_path)
    assert got == {"separate": True, "ops": [True, True]}
