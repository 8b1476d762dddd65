"""The dashboard's page, script and style (data, not code: a package only so that
setuptools ships the folder without warning that it is missing from its packages)."""
