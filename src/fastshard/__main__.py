from fastshard.cli import main

raise SystemExit(main())
