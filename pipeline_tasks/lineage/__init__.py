"""What happened, for people: lineage queries, pages, reports, links."""
