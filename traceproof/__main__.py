from traceproof.entry import main

main()
