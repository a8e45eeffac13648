#!/usr/bin/env python3
"""The layering check's own test (run by ctest as check_layers_selftest): scripts/check-layers
over a tiny tree (app/ over mid/ over low/) fails on a planted upward include, on an include
between two directories of one line, on an upward declaration, on a cycle, on an unlisted
directory and on a stale allowlist entry, and passes on the clean tree and on an allowlisted
violation."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
CHECK = os.path.join(HERE, "..", "..", "scripts", "check-layers")

DOC = """# fixture

<!-- layers:begin -->
    1. app/
    2. mid/  side/      (two directories of one line)
    3. low/
<!-- layers:end -->
"""

TREE = {
    "src/app/app.c": '#include "mid/mid.h"\n#include "side/side.h"\nint app_fn(void) { return mid_fn(); }\n',
    "src/mid/mid.h": '#include "low/low.h"\nint mid_fn(void);\n',
    "src/mid/mid.c": '#include "mid/mid.h"\nint mid_fn(void) { return low_fn(); }\n',
    "src/side/side.h": "int side_fn(void);\n",
    "src/side/side.c": '#include "side/side.h"\n#include "low/low.h"\nint side_fn(void) { return low_fn(); }\n',
    "src/low/low.h": "int low_fn(void);\n",
    "src/low/low.c": '#include "low/low.h"\nint low_fn(void) { return 1; }\n',
}


class CheckLayers(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="check-layers-")
        self.addCleanup(shutil.rmtree, self.root)
        self.write("docs/ARCHITECTURE.md", DOC)
        for path, text in TREE.items():
            self.write(path, text)

    def write(self, path, text, append=False):
        full = os.path.join(self.root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "a" if append else "w", encoding="utf-8") as f:
            f.write(text)

    def run_check(self):
        p = subprocess.run([sys.executable, CHECK, "--root", self.root], capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr

    def test_clean_tree_passes(self):
        rc, out = self.run_check()
        self.assertEqual(rc, 0, out)
        self.assertIn("all pointing down", out)

    def test_planted_upward_include_fails(self):
        self.write("src/low/low.c", '#include "app/app.h"\n', append=True)
        self.write("src/app/app.h", "int app_fn(void);\n")
        rc, out = self.run_check()
        self.assertEqual(rc, 1, out)
        self.assertIn("low/low.c -> app/app.h: includes app/ (layer 1) above low/ (layer 3)", out)

    def test_include_within_one_line_fails(self):
        self.write("src/mid/mid.c", '#include "side/side.h"\n', append=True)
        rc, out = self.run_check()
        self.assertEqual(rc, 1, out)
        self.assertIn("mid/mid.c -> side/side.h: includes side/ (layer 2) on the same line as mid/ (layer 2)", out)

    def test_upward_declaration_fails(self):
        # A lower header declaring a function a higher directory defines: a call up with no include.
        self.write("src/low/low.h", "int app_fn(void);\n", append=True)
        rc, out = self.run_check()
        self.assertEqual(rc, 1, out)
        self.assertIn("low/low.h declares app_fn", out)

    def test_cycle_fails(self):
        self.write("src/low/low.c", '#include "mid/mid.h"\n', append=True)
        rc, out = self.run_check()
        self.assertEqual(rc, 1, out)
        self.assertIn("cycle between directories: low <-> mid", out)

    def test_cycle_between_unlisted_directories_fails(self):
        self.write("src/x/x.h", '#include "y/y.h"\n')
        self.write("src/y/y.h", '#include "x/x.h"\n')
        rc, out = self.run_check()
        self.assertEqual(rc, 1, out)
        self.assertIn("directory x/ is not in the layer list", out)
        self.assertIn("cycle between directories: x <-> y", out)

    def test_allowlisted_violation_passes_and_stale_entry_fails(self):
        self.write("src/low/low.c", '#include "mid/mid.h"\n', append=True)
        self.write("scripts/layers-allow.txt", "low/low.c -> mid/mid.h   # someone: removes it\n")
        rc, out = self.run_check()
        self.assertEqual(rc, 0, out)
        # The violation is gone, the entry stays: the list may only shrink.
        self.write("src/low/low.c", TREE["src/low/low.c"])
        rc, out = self.run_check()
        self.assertEqual(rc, 1, out)
        self.assertIn("stale allowlist entry (no longer violated; remove it): low/low.c -> mid/mid.h", out)

    def test_missing_layer_list_is_an_error(self):
        self.write("docs/ARCHITECTURE.md", "# no list here\n")
        rc, out = self.run_check()
        self.assertEqual(rc, 2, out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
