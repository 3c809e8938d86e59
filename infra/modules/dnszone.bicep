// One private DNS zone (privatelink.<service>.<storage suffix>) linked to the virtual network;
// network.bicep deploys one per storage service unless an existing zone is given for it.

@description('Name of the zone, e.g. privatelink.blob.core.windows.net.')
param zoneName string

@description('Resource id of the virtual network the zone resolves in.')
param vnetId string

@description('Name of the link (the virtual network\'s name and -link).')
param linkName string

@description('Tags applied to the zone and the link.')
param tags object = {}

resource zone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: zoneName
  location: 'global'
  tags: tags
}

resource link 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: zone
  name: linkName
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnetId
    }
  }
}

@description('Resource id of the zone.')
output id string = zone.id
