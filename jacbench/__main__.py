from jacbench.faces.cli import main

main()
