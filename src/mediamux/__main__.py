from mediamux.cli import main

raise SystemExit(main())
