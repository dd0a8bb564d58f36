"""The studio's pages, one module per page (or pair of pages): each gathers what its template shows."""
