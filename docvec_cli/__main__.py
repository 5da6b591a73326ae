from docvec_cli.main import main

main()
