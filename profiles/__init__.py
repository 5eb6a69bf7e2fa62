"""Built-in edgenas profiles (TOML files), shipped as package data."""
