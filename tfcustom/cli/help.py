"""``--help`` for the tfcustom scripts: our flags first, grouped; ``--helpfull`` adds the rest.

A script passes ``groups`` (title -> flag names) to `tfcustom.cli.parse_flags`;
flags of the script that no group names are listed under "other" (so flags
added later are never hidden), and ``--helpfull`` then lists absl's and
TensorFlow's own flags by module.
"""

import sys
from typing import Dict, Optional, Sequence

from absl import flags

FOREIGN_PREFIXES = ("absl.", "tensorflow", "keras", "tensorflow_datasets")


def _is_ours(module: str) -> bool:
    return not module.startswith(FOREIGN_PREFIXES)


def _describe(flag) -> str:
    default = flag.default
    if isinstance(default, (list, tuple)):
        default = ",".join(map(str, default))
    head = f"--[no]{flag.name}" if flag.flag_type() == "bool" else f"--{flag.name}"
    text = flags.text_wrap(f"{head}: {flag.help} (default: {default})", length=98, indent="      ", firstline_indent="")
    return "  " + text


def _usage(doc: Optional[str]) -> str:
    doc = doc or sys.modules["__main__"].__doc__ or ""
    first = doc.strip().split("\n\n")
    return "\n\n".join(first[:2]).strip()


def print_help(groups: Optional[Dict[str, Sequence[str]]] = None, doc: Optional[str] = None, full: bool = False) -> None:
    """Print the grouped help to stdout."""
    by_module = flags.FLAGS.flags_by_module_dict()
    ours = {f.name: f for module, fl in by_module.items() if _is_ours(module) for f in fl}
    out = [_usage(doc), ""]
    listed = set()
    for title, names in (groups or {}).items():
        present = [n for n in names if n in ours]
        if not present:
            continue
        out.append(f"{title}:")
        out.extend(_describe(ours[n]) for n in present)
        out.append("")
        listed.update(present)
    rest = sorted(set(ours) - listed)
    if rest:
        out.append("other:" if groups else "flags:")
        out.extend(_describe(ours[n]) for n in rest)
        out.append("")
    if full:
        out.append("absl and TensorFlow flags:")
        for module, fl in sorted(by_module.items()):
            if _is_ours(module):
                continue
            out.append(f"  {module}:")
            out.extend("  " + _describe(f) for f in sorted(fl, key=lambda f: f.name))
        out.append("")
    else:
        out.append("--helpfull also lists absl's and TensorFlow's flags (e.g. --verbosity=1 or -v=1 shows TensorFlow's own logs).")
    print("\n".join(out))
