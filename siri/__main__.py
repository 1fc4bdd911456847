from siri.cli import main

raise SystemExit(main())
