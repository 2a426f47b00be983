from canarygate.cli import main

raise SystemExit(main())
