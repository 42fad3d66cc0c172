from medsynth.cli import main

main()
