"""Files genos ships inside the package (located with `importlib.resources`)."""
