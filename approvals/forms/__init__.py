"""Forms, one module per subject: they parse and validate input for views and the admin; services decide."""
