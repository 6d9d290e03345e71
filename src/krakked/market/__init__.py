"""Market-data domain: types and pure logic, no I/O (tested without mocks)."""
