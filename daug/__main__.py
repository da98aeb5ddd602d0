from daug.cli import main

raise SystemExit(main())
