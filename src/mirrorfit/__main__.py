from mirrorfit.cli import main

raise SystemExit(main())
