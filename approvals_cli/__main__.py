from approvals_cli.cli import main

raise SystemExit(main())
