"""The dashboard (`/ui`): static HTML, CSS and JavaScript over the JSON API."""
