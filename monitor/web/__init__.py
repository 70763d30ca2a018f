"""The public status page: incidents, maintenance and availability per municipality, customer lookup."""
