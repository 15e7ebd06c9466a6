"""`manage`: renders the process-manager configuration and drives supervisord."""
