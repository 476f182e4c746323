from lasegm.cli import main

raise SystemExit(main())
