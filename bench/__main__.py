from bench.sweep import main

main()
