from traceproof.cli import main

main()
