"""Helpers shared by a unit test file and its end-to-end sibling (test_x.py and
test_x_e2e.py, or test_x_unit.py and test_x.py): one definition, imported by both."""
