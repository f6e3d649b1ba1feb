"""Reports: `report.json` is the single source; markdown, terminal tables and plots render from it."""
