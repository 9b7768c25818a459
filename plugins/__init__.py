"""The built-in plugins of bench, registered through entry points like any third party's."""
