"""README.md's results tables are what docs/results_table.py makes of the committed records."""

import subprocess
import sys

from conftest import REPO


def test_readme_results_equal_the_generated_tables():
    made = subprocess.run([sys.executable, str(REPO / "docs" / "results_table.py")], capture_output=True, text=True,
                          check=True, cwd=REPO).stdout.strip()
    readme = (REPO / "README.md").read_text()
    start = readme.index("<!-- results:start")
    block = readme[readme.index("-->", start) + 3 : readme.index("<!-- results:end -->")].strip()
    assert block == made, "README.md's results differ from the records: run python docs/results_table.py --write"
