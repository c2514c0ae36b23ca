from agentbox.cli import main

raise SystemExit(main())
