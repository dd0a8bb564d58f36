"""Looking at a graph or a finished run: preview, trace views, report, dataset card, diagrams, pages, the Hub."""
