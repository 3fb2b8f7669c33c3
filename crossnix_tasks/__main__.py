from crossnix_tasks.cli import main

main()
