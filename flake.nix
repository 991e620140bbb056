{
  description = "Saga orchestrator of the Balance+ platform: development shell";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_24
            pkgs.postgresql_15
            pkgs.rabbitmq-server
          ];
          shellHook = ''
            echo "saga-orchestrator dev shell: node $(node --version), $(postgres --version)"
            echo "npm ci && npm start   (embedded mode)   |   npm test   (needs PostgreSQL on 127.0.0.1:5432)"
          '';
        };
      });
    };
}
