"""Collectors read at scrape time, one module per source."""
