from convergio.cli import app

app(prog_name="convergio")
