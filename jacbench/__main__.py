from jacbench.cli import app

app(prog_name="jacbench")
