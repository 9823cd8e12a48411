from pushplat.cli import main

raise SystemExit(main())
