from jacbench.faces.cli import app

app(prog_name="jacbench")
